"""Workflows over storage, called by the API (``service/api``) and the dashboard
(``service/ui``) alike:

    requests     the planner's rules for a stored request; create and change one
    plans        run a plan (from a scenario, or from the stored org, inventory, requests
                 and last period's usage), compare two, publish one for its period
    disputes     file one; who may see it; who may resolve it (never its filer, never a
                 lead of its team); resolve it; escalate the unanswered ones
    accounting   GPU-hours per team and GPU type, the planner's history, the hoarding score
    auditing     the audit entries a reader may see, and the chain's verification for it

Every function takes the caller's session (one transaction), decides, and reads and writes
through ``storage/`` (it builds no SQL itself and knows nothing of HTTP). A user mistake is
an ``InputError`` naming the field; a missing or busy object ``NotFound`` / ``Conflict``.
Authorisation by role and team is the service's (``service/deps.py``); the rules that are
governance's own (who may see or resolve a dispute, who may read an audit entry) live here,
and the service turns their refusals into 403s. Every step is an audit entry.

``storage/`` never imports this package.
"""
