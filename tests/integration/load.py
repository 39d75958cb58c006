"""Load on an echo stack through the official `openai` client, bounded in count and time.

    python load.py BASE_URL OUT.json [--seconds S | --count N] [--rate R] [--concurrency C]
                   [--timeout T]

Requests alternate between a long prompt (prefilled remotely by the echo graph) and a short one
(prefilled where it is decoded). Each ends one of three ways, recorded with its times:
answered (the echo came back, with its `system_fingerprint`), failed (an error came back), or
lost (no answer within the timeout). The client never retries. With `--rate`, request N is
sent at N/R seconds (or as soon as a worker is free after that), so an outage costs requests in
proportion to its length, not to how fast errors come back.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import openai

LONG = " ".join(f"word{i}" for i in range(40))
SHORT = "a short prompt"


def one(client: openai.OpenAI, number: int, t0: float) -> dict:
    prompt = LONG if number % 2 == 0 else SHORT
    start = time.monotonic()
    # "at": seconds since the load began; "t": the start on CLOCK_MONOTONIC, which every
    # process on the machine shares, for lining requests up with a fault.
    record = {"n": number, "kind": "long" if prompt is LONG else "short", "at": start - t0,
              "t": start}  # fmt: skip
    try:
        answer = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": prompt}]
        )
        content = answer.choices[0].message.content if answer.choices else None
        if content == prompt:
            record |= {"outcome": "answered", "fingerprint": answer.system_fingerprint}
        else:
            record |= {"outcome": "failed", "error": f"wrong answer: {content!r}"[:200]}
    except openai.APITimeoutError:
        record |= {"outcome": "lost", "error": "no answer within the timeout"}
    except openai.APIError as exc:
        record |= {"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
    record["seconds"] = time.monotonic() - start
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=15)
    parser.add_argument("--rate", type=float, default=0)
    args = parser.parse_args()
    client = openai.OpenAI(
        base_url=args.base_url, api_key="none", max_retries=0, timeout=args.timeout
    )
    t0 = time.monotonic()
    records: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def worker() -> None:
        while True:
            with lock:
                number = next(counter)
            if args.count and number >= args.count:
                return
            if args.seconds and time.monotonic() - t0 >= args.seconds:
                return
            if args.rate:
                time.sleep(max(0.0, t0 + number / args.rate - time.monotonic()))
            record = one(client, number, t0)
            with lock:
                records.append(record)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records.sort(key=lambda r: r["n"])
    with open(args.out, "w") as out:
        json.dump(records, out)


if __name__ == "__main__":
    main()
