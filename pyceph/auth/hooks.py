"""A mixin forwarding the messenger's auth hooks to an auth handler.

MonClient and each OSD session are the messenger's ``ops``; their auth hooks are those
of a cephx object (the client itself for the mon, an authorizer for a service), kept in
``self.auth``.  Hook names and shapes: :class:`pyceph.msgr.protocol.AuthHandler`.
"""

from __future__ import annotations


class AuthHooksMixin:
    """Provides ``get_auth_request``, ``handle_auth_reply_more``, ``handle_auth_done`` and
    ``handle_auth_bad_method`` (and msgr1's ``message_signing_key``) by calling the same
    methods of ``self.auth``."""

    auth: object

    def get_auth_request(self, con):
        return self.auth.get_auth_request(con)

    def handle_auth_reply_more(self, con, payload):
        return self.auth.handle_auth_reply_more(con, payload)

    def handle_auth_done(self, con, global_id, con_mode, payload):
        return self.auth.handle_auth_done(con, global_id, con_mode, payload)

    def handle_auth_bad_method(self, con, method, result, allowed_methods, allowed_modes):
        return self.auth.handle_auth_bad_method(con, method, result, allowed_methods, allowed_modes)

    def message_signing_key(self, con):
        return self.auth.message_signing_key(con)
