"""Commands around a stream: `listen` (live stats of a stream), `replay FILE` (publish a recording again),
`keys DIR` (CurveZMQ keys). Also `python -m tools.stream ...`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

from pipeline import wire
from pipeline.publisher import DEFAULT_ENDPOINT, Publisher, PublisherSettings, PublishError, replay


def _add_socket_args(p: argparse.ArgumentParser, default_mode: str = "latest", subscriber: bool = False) -> None:
    if subscriber:  # repeatable: the streams of several publishers, merged by stream id
        p.add_argument("--endpoint", action="append", default=None,
                       help=f"publisher to subscribe to (repeatable: several publishers, their streams merged by "
                            f"id; default {DEFAULT_ENDPOINT})")
    else:
        p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--mode", choices=["latest", "lossless"], default=default_mode,
                   help="latest: PUB/SUB, drops for slow consumers; lossless: PUSH/PULL, one consumer, no loss")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("listen", help="subscribe to a stream and show live stats (fps, persons, bytes/s, gaps)")
    _add_socket_args(p, subscriber=True)
    p.add_argument("--stream", default=None, help="only this stream id (default: every stream)")
    p.add_argument("--curve-server-key", type=Path, default=None, help="server public key file (DIR/server.key)")
    p.add_argument("--curve-client-key", type=Path, default=None, help="client secret key file (DIR/client.key_secret)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between stats lines (default 1)")
    p.set_defaults(func=listen_command)

    p = subparsers.add_parser("replay", help="publish a --record file again, at its original pace or as fast as possible")
    p.add_argument("file", type=Path, help="a file written by --record")
    _add_socket_args(p)
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of the original pace")
    p.add_argument("--speed", type=float, default=1.0, help="pace factor (2 = twice as fast; default 1)")
    p.add_argument("--wait", type=float, default=0.0,
                   help="latest mode: wait up to this many seconds for a first subscriber before sending")
    p.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    p.add_argument("--hwm", type=int, default=PublisherSettings.hwm,
                   help="messages queued per subscriber before latest mode drops (raise it with --fast)")
    p.add_argument("--curve-server-secret", type=Path, default=None, help="enable CurveZMQ with this server secret key")
    p.add_argument("--curve-clients", type=Path, default=None, help="directory of authorised client public keys")
    p.set_defaults(func=replay_command)

    p = subparsers.add_parser("keys", help="make CurveZMQ key pairs for an encrypted, authenticated stream")
    p.add_argument("dir", type=Path, help="directory to write server.key(_secret), client.key(_secret) into")
    p.add_argument("--client", action="append", default=None,
                   help="client name (repeatable; default: one client named 'client')")
    p.set_defaults(func=keys_command)


def keys_command(args: argparse.Namespace) -> int:
    import zmq.auth

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    authorized = out / "authorized_clients"
    authorized.mkdir(exist_ok=True)
    names = args.client or ["client"]
    for name in ["server", *names]:
        if (out / f"{name}.key_secret").exists():
            print(f"error: {out / (name + '.key_secret')} exists; remove it or choose another DIR", file=sys.stderr)
            return 1
    zmq.auth.create_certificates(str(out), "server")
    for name in names:
        public, _ = zmq.auth.create_certificates(str(out), name)
        Path(public).replace(authorized / f"{name}.key")
        # keep a copy beside the secret so the client directory is self-contained
        (out / f"{name}.key").write_bytes((authorized / f"{name}.key").read_bytes())
    for f in out.glob("*.key_secret"):
        os.chmod(f, 0o600)
    print(f"keys written to {out}\n"
          f"publisher config:\n  publish:\n    curve: true\n    curve_server_secret: {out / 'server.key_secret'}\n"
          f"    curve_clients: {authorized}\n"
          f"subscriber: Subscriber(endpoint, server_key='{out / 'server.key'}', client_key='{out / (names[0] + '.key_secret')}')")
    return 0


def replay_command(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"error: recording {args.file} not found", file=sys.stderr)
        return 1
    cfg = PublisherSettings(
        endpoint=args.endpoint, mode=args.mode, hwm=args.hwm, curve=args.curve_server_secret is not None,
        curve_server_secret=args.curve_server_secret, curve_clients=args.curve_clients,
    )
    pub = Publisher(cfg)
    try:
        pub.open()
    except PublishError as e:  # a busy port, a missing key file
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"replaying {args.file} on {pub.endpoint} ({args.mode})", file=sys.stderr, flush=True)
    try:
        if args.wait > 0 and not pub.wait_subscriber(args.wait):
            print(f"no subscriber within {args.wait} s; sending anyway", file=sys.stderr)
        while True:
            n = replay(pub, args.file, fast=args.fast, speed=args.speed)
            if not args.loop:
                break
        print(f"replayed {n} messages", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except wire.WireError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        undelivered = pub.close()
    if undelivered:
        print(f"error: {undelivered}", file=sys.stderr)
        return 1
    return 0


def stage_figures(times: list[dict]) -> list[tuple[str, Optional[float], Optional[float], Optional[float]]]:
    """Per stage, from the `times` of frames received (docs/metrics.md): (name, service ms p50, wait ms
    p50, busy fraction). A stage's service is from when it took a frame ("<stage>:in") to when it passed
    it on ("<stage>"), its wait from the stage before passing the frame on to it taking it, its busy
    fraction the growth of its busy seconds ("<stage>:busy") over the time between the first and last
    frame. None where the frames do not tell (a publisher without these stamps)."""
    import statistics

    if not times:
        return []
    names = sorted({k.split(":")[0] for t in times for k in t},
                   key=lambda n: statistics.median(t.get(n, t.get(n + ":in", 0.0)) for t in times))
    out = []
    for i, name in enumerate(names):
        service = [t[name] - t[name + ":in"] for t in times if name in t and name + ":in" in t]
        prev = names[i - 1] if i else None
        wait = [t[name + ":in"] - t[prev] for t in times if prev in t and name + ":in" in t] if prev else []
        busy = None
        marked = [t for t in times if name + ":busy" in t and name in t]
        if len(marked) > 1 and marked[-1][name] > marked[0][name]:
            busy = (marked[-1][name + ":busy"] - marked[0][name + ":busy"]) / (marked[-1][name] - marked[0][name])
        if service or wait or busy is not None:
            out.append((name, 1000 * statistics.median(service) if service else None,
                        1000 * statistics.median(wait) if wait else None, busy))
    return out


def _figures_line(figures) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    return "  ".join(f"{name} service {ms(svc)} wait {ms(wait)} ms busy "
                     + ("-" if busy is None else f"{busy:.0%}") for name, svc, wait, busy in figures)


def listen_command(args: argparse.Namespace) -> int:
    from pipeline.subscriber import Subscriber

    def shown(text: str, limit: int = 200) -> str:
        """Publisher-controlled text made safe for a terminal: control characters (escape sequences
        that set the title, clear the screen or write the clipboard; CR, LF) escaped, length bounded."""
        out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text)[:limit])
        return out + ("..." if len(str(text)) > limit else "")

    endpoints = args.endpoint or [DEFAULT_ENDPOINT]
    sub = Subscriber(endpoints, stream=args.stream, mode=args.mode,
                     server_key=args.curve_server_key, client_key=args.curve_client_key)
    print(f"listening on {', '.join(endpoints)} ({args.mode}); Ctrl-C to stop", file=sys.stderr, flush=True)
    start = last = time.monotonic()
    frames = persons = 0
    last_stats = dict(sub.stats)
    recent: list[dict] = []  # the times of the frames of this interval
    try:
        while True:
            now_ = time.monotonic()
            if args.duration is not None and now_ - start >= args.duration:
                break
            msg = sub.recv(timeout_s=min(args.interval, 0.25))
            if msg is not None and msg.kind == "frame":
                frames += 1
                persons += len(msg.persons)
                recent.append(msg.times)
            elif msg is not None and msg.kind == "end":
                print(f"end of stream {shown(msg.stream)}: {msg.frames} frames ({shown(msg.reason)})")
            now_ = time.monotonic()
            if now_ - last >= args.interval or (args.frames and frames >= args.frames) or (msg is not None and msg.kind == "end"):
                dt = max(now_ - last, 1e-9)
                figures = stage_figures(recent)
                recent = []
                if figures:  # per stage: where the time goes (docs/metrics.md)
                    print(f"  stages: {_figures_line(figures)}", flush=True)
                s = sub.stats
                df = s["frames"] - last_stats["frames"]
                dp = s["persons"] - last_stats["persons"]
                print(
                    f"{df / dt:6.1f} fps  {dp / max(df, 1):4.1f} persons/frame  "
                    f"{(s['bytes'] - last_stats['bytes']) / dt / 1e6:7.2f} MB/s  gaps {s['gaps']} "
                    f"(missed {s['missed']})  malformed {s['malformed']}  oversized {s['oversized']}  "
                    f"frames {s['frames']}",
                    flush=True,
                )
                last, last_stats = now_, dict(s)
            if args.frames and frames >= args.frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stream", description="publish-side commands")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
