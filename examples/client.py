"""Submit a job with the client library, follow its progress, then ask about it.

    python examples/client.py [HOST] [PORT]

Start a server first, e.g. `make serve`.
"""
import asyncio
import sys

from jobmonitor.client import ReplyError, connect


async def main(host: str, port: int) -> int:
    async with await connect(host, port) as client:
        tx = await client.submit("count", {"Count": "3", "Delay": "0.1"}, job_name="client demo")
        print(f"submitted {tx.transaction_id}")
        async for line in tx:
            if line.progress:
                print(f"  {line.progress.percent}% done")
            elif line.is_error:
                print(f"  error: {line.text}")
        result = await tx.result()
        status = await client.status(tx.transaction_id)
        print(f"{status.transaction_id} ({status.job_name}): {result.outcome.value}, "
              f"{status.lines} lines")
        try:
            await client.cancel(tx.transaction_id)
        except ReplyError as error:  # it has ended: R0005010
            print(f"cannot cancel: R{error.code:07d} {error.detail}")
        return 0 if result.ok else 1


if __name__ == "__main__":
    args = [*sys.argv[1:], None, None]
    sys.exit(asyncio.run(main(args[0] or "127.0.0.1", int(args[1] or 7400))))
