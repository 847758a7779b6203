// Live refresh: every element with data-refresh="N" is re-read from the server every N seconds
// (not while the user is typing in a form on the page, and not while the tab is hidden).
(function () {
  function busy() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }
  document.querySelectorAll("[data-refresh]").forEach(function (el, k) {
    var every = Math.max(2, parseInt(el.getAttribute("data-refresh"), 10) || 10) * 1000;
    setInterval(function () {
      if (document.hidden || busy()) return;
      fetch(location.href, {credentials: "same-origin"}).then(function (r) {
        if (r.redirected || !r.ok) return null;
        return r.text();
      }).then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelectorAll("[data-refresh]")[k];
        if (fresh && !el.contains(document.activeElement)) el.innerHTML = fresh.innerHTML;
      }).catch(function () {});
    }, every);
  });
})();
