#!/usr/bin/env python3
"""A real SMTP server for tests/notifiers.rs, built on aiosmtpd.

Listens on 127.0.0.1 (port 0 = any free port) and prints, one JSON object per line on
stdout, after a first line `LISTENING 127.0.0.1:<port>`:

    {"event": "auth", "mechanism": "PLAIN", "login": "alerts", "ok": true}
    {"event": "message", "mail_from": "...", "rcpt_tos": [...], "data": "<raw message>",
     "tls": true, "authenticated": true, "login": "alerts"}

Options:
  --starttls          offer STARTTLS with a throwaway certificate for 127.0.0.1 and
                      localhost (made by trustme) and refuse anything else before it
  --user U --password P
                      require AUTH (PLAIN or LOGIN) with these credentials
  --tempfail N        answer the first N messages with "451 try again later"

The password is never printed. The server exits when its stdin closes, so it does not
outlive the test that started it.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler:
    def __init__(self, tempfail):
        self.tempfail = tempfail

    async def handle_DATA(self, server, session, envelope):
        if self.tempfail > 0:
            self.tempfail -= 1
            emit({"event": "tempfail", "mail_from": envelope.mail_from})
            return "451 4.3.0 try again later"
        content = envelope.content
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        login = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        emit(
            {
                "event": "message",
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "data": content,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "login": login,
            }
        )
        return "250 2.0.0 OK: queued"


def make_authenticator(user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        login = None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
        emit({"event": "auth", "mechanism": mechanism, "login": login, "ok": ok})
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticator


def tls_context():
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def exit_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--tempfail", type=int, default=0)
    args = p.parse_args()

    ctx = tls_context() if args.starttls else None
    handler = Handler(args.tempfail)
    auth = make_authenticator(args.user, args.password or "") if args.user else None

    def factory():
        return SMTP(
            handler,
            hostname="mongopulse-test-smtp",
            tls_context=ctx,
            require_starttls=args.starttls,
            authenticator=auth,
            auth_required=auth is not None,
            auth_require_tls=args.starttls,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING 127.0.0.1:{port}\n")
    sys.stdout.flush()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
