"""kafka preset: Tansu, a Kafka-protocol broker, with the configured topics.

The broker runs with its in-memory storage engine: nothing it holds survives
a stop. That is why the topics are created after every start (after_ready)
and why consumers must drain a topic before the broker stops (the example
agents do; see examples/agent.py). `binary` must name a `tansu` executable:
the command line is Tansu's, not Apache Kafka's.

Tansu reads each of its options from an environment variable too
(LISTENER_URL, STORAGE_ENGINE, SCHEMA_REGISTRY, ...). The command line sets
the ones that matter, and `env -u` removes the others from what the broker
inherits, so a variable meant for something else cannot reconfigure it; a
variable set in the service's own `env` is kept.
"""

from __future__ import annotations

import logging
import shutil
import signal

from overture.config.model import Probe, Stop
from overture.errors import StartError
from overture.presets.base import Launch, Preset

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
STORAGE = "memory://tansu/"
TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
"""The environment variables `tansu broker` reads its options from."""

STOP = Stop(signal=signal.SIGTERM, timeout=10.0)

_TOPIC_ALREADY_EXISTS = 36


class KafkaPreset(Preset):
    executable = "tansu"
    default_port = DEFAULT_PORT

    @property
    def bootstrap(self) -> str:
        host = self.service.host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.port}"

    def probe(self) -> Probe:
        # No topics here: they are created after this probe passes.
        return Probe(kafka=self.bootstrap)

    def launch(self) -> Launch:
        unset = [name for name in TANSU_ENV if name not in self.service.env]
        listener = f"tcp://{self.bootstrap}"
        argv = [
            shutil.which("env") or "/usr/bin/env",
            *(arg for name in unset for arg in ("-u", name)),
            str(self.binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            STORAGE,
        ]
        return Launch(argv=argv, ready=self.probe(), stop=STOP)

    async def after_ready(self) -> None:
        """Create the configured topics that the broker does not have."""
        if not self.service.topics:
            return
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id="overture"
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in self.service.topics if t.name not in existing]
            if not missing:
                return
            response = await admin.create_topics(
                [NewTopic(t.name, t.partitions, 1) for t in missing]
            )
        finally:
            await admin.close()

        failed = []
        for topic, code, *message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                failed.append(
                    f"{topic} (error {code}: {message[0] if message else ''})"
                )
        if failed:
            raise StartError(f"cannot create topics: {', '.join(failed)}")
        log.info(
            "service=%s created topics=%s",
            self.name,
            ",".join(f"{t.name}:{t.partitions}" for t in missing),
        )


PRESET = KafkaPreset
