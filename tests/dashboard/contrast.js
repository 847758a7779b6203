// Text whose contrast with its background is under 4.5:1 (WCAG AA), as 'TAG ratio text'.

function lum(c){var m=c.match(/[\d.]+/g).map(Number);var a=m.length>3?m[3]:1;
 var v=m.slice(0,3).map(function(x){x/=255;return x<=0.03928?x/12.92:Math.pow((x+0.055)/1.055,2.4)});
 return [0.2126*v[0]+0.7152*v[1]+0.0722*v[2],a];}
function bg(el){while(el){var c=getComputedStyle(el).backgroundColor;var l=lum(c);if(l[1]>0.5)return l[0];el=el.parentElement;}return 1;}
var bad=[];var all=document.querySelectorAll('body *');
for(var i=0;i<all.length;i++){var el=all[i];
 var own=Array.prototype.some.call(el.childNodes,function(n){return n.nodeType===3&&n.textContent.trim()});
 if(!own||el.offsetParent===null&&el.tagName!=='BODY')continue;
 var f=lum(getComputedStyle(el).color)[0],b=bg(el);
 var r=(Math.max(f,b)+0.05)/(Math.min(f,b)+0.05);
 if(r<4.5)bad.push(el.tagName+' '+r.toFixed(2)+' '+el.textContent.trim().slice(0,40));}
return bad;
