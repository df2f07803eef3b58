"""One process hammering one Redis rate limit, for the cross-process limit tests.

``python -m tests.support.limits_hammer --url redis://... --prefix P --kind rpm --value 30
--window 1 --tokens 0 --start EPOCH --seconds 2 --tasks 10`` waits until ``EPOCH``, then runs
``tasks`` loops that acquire the limit (each willing to wait up to ``--wait`` seconds) until
``seconds`` have passed, and prints one JSON object: the Redis times of the admissions and the
number of refusals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from elevenfactor.errors import LimitExceeded
from elevenfactor.models import Limiter, LimitKey
from elevenfactor.models._limits_redis import RedisLimits


async def _run(args: argparse.Namespace) -> dict[str, object]:
    limiter = Limiter(RedisLimits(args.url, prefix=args.prefix))
    key = LimitKey("hammer", args.kind, args.value, window=args.window)
    admitted: list[float] = []
    refused = 0
    await asyncio.sleep(max(args.start - time.time(), 0.0))
    end = time.monotonic() + args.seconds

    async def loop() -> None:
        nonlocal refused
        while time.monotonic() < end:
            deadline = min(time.monotonic() + args.wait, end)
            try:
                permit = await limiter.acquire([key], args.tokens, deadline=deadline)
            except LimitExceeded:
                refused += 1
                await asyncio.sleep(0.01)
                continue
            admitted.append(permit.at)

    try:
        await asyncio.gather(*(loop() for _ in range(args.tasks)))
    finally:
        await limiter.aclose()
    return {"admitted": admitted, "refused": refused}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, hammer, print the result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--kind", choices=["rpm", "tpm"], default="rpm")
    parser.add_argument("--value", type=int, required=True)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--tokens", type=int, default=0)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--wait", type=float, default=0.5)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
