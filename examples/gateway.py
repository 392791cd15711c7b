"""The demo gateway: takes events over HTTP and publishes them to Kafka.

`POST /events` with a JSON object that has an `id` publishes the object to
the `events` topic, keyed by `id` (so one id always lands in one partition),
and answers 202 only once the broker has acknowledged the write with
acks=all: a 202 means the event is the broker's to keep. `GET /health`
answers 200 when the broker answers a metadata request (and PostgreSQL a
`SELECT 1`, when DATABASE_URL is set), 503 otherwise, with the reason.

Run it with `python -m uvicorn examples.gateway:app --port 8000`, or
`python -m examples.gateway`, which reads PORT (default 8000).
Environment: KAFKA_BOOTSTRAP (default 127.0.0.1:9092), DATABASE_URL
(optional). On SIGTERM uvicorn stops taking requests, finishes those in
flight, then the producer flushes and disconnects.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse

TOPIC = "events"
HEALTH_TIMEOUT = 1.0


class Dependencies:
    """The gateway's connections, opened at start-up and closed at shutdown."""

    def __init__(self, bootstrap: str, database_url: str | None) -> None:
        # No idempotent producer: the demo broker (Tansu) does not offer it.
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False
        )
        self.database_url = database_url
        self._db: Any = None  # one asyncpg connection, opened on first check

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()  # flushes anything still buffered
        if self._db is not None:
            await self._db.close()

    async def check(self) -> dict[str, str]:
        """Each dependency's state: "ok" or why not."""
        checks = {"kafka": await _attempt(self.producer.client.fetch_all_metadata())}
        if self.database_url:
            checks["postgres"] = await _attempt(self._select_one())
        return checks

    async def _select_one(self) -> None:
        if self._db is None or self._db.is_closed():
            self._db = await asyncpg.connect(self.database_url)
        await self._db.fetchval("SELECT 1")


async def _attempt(awaitable: Any) -> str:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await awaitable
    except TimeoutError:
        return "no answer in time"
    except Exception as exc:  # health reports the failure; it never raises
        return f"{type(exc).__name__}: {exc}"
    return "ok"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    deps = Dependencies(
        os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        os.environ.get("DATABASE_URL"),
    )
    await deps.start()
    app.state.deps = deps
    try:
        yield
    finally:
        await deps.stop()


app = FastAPI(title="Overture demo gateway", lifespan=lifespan)


@app.get("/health")
async def health() -> JSONResponse:
    checks = await app.state.deps.check()
    ok = all(state == "ok" for state in checks.values())
    status = {"status": "ok" if ok else "failing", "checks": checks}
    return JSONResponse(status, status_code=200 if ok else 503)


@app.post("/events", status_code=202)
async def publish(event: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    if "id" not in event:
        raise HTTPException(422, "an event is a JSON object with an `id`")
    key = str(event["id"]).encode()
    value = json.dumps(event, separators=(",", ":")).encode()
    try:
        sent = await app.state.deps.producer.send_and_wait(TOPIC, value, key=key)
    except KafkaError as exc:
        raise HTTPException(503, f"broker did not acknowledge: {exc}") from exc
    return {"id": event["id"], "partition": sent.partition, "offset": sent.offset}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
