"""The controller's gate: who is calling (authentication), may they
(authorization), and how much (limits live in `controller/limits.py`).

    TLS handshake (client certificate from the cluster CA, required)
      -> interceptor: identity from the certificate, or from a bearer token
      -> rate limit -> request limits -> authorize(identity, method, request)
      -> pod-binding check for nodes -> the servicer

Words: *identity* (user, groups, role), *role* (admin, edit, view, node,
scheduler, bootstrap, anonymous, none), *decision* (allowed, reason, check).
Imports `cowpod` and `controller.store`; nothing imports the servicers here
except the server that mounts them.
"""
