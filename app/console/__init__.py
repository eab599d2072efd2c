"""The operator's web console at ``/console`` and the key holder's ``/me`` page.

Server-rendered (Jinja2, ``templates/``), no external assets (``static/``: one stylesheet, one small
script), charts drawn as SVG on the server (``charts``). Rules, owned here and in ``sessions``:

- Sign-in exchanges the master key for a random session token in an HttpOnly, SameSite=Strict cookie
  (Secure over TLS); only the token's sha256 is stored, with an expiry (``console.session_hours``).
  The master key is never sent back to the browser nor kept in it.
- Every form carries a CSRF token: derived from the session token for signed-in forms, a
  double-submit cookie for the sign-in and ``/me`` forms. A POST without the right token is 403.
- Every page is sent with a strict Content-Security-Policy (``default-src 'none'``; scripts, styles
  and images only from the gateway itself; no inline script or style), ``X-Frame-Options: DENY``,
  ``no-store`` caching and ``no-referrer``.
- Pages call the same functions as the admin API (``app.accounts``, ``app.usage``, ``app.alerts``);
  the console's own reads live in ``queries``.
"""
