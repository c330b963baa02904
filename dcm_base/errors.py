"""The project's one exception tree, and the one place that maps an error to an exit code.

::

    DcmError                        base of every error the project raises on purpose
    ├── InputError                  bad input the user named (a file, key, option, URL): exit 2
    │   ├── ConfigError             a config file or value is invalid (every service; names file and key)
    │   │   ├── RulesConfigError    a rules or rules-service file is invalid     (speed_layer.errors)
    │   │   ├── TriggerError        an edge trigger of a gateway is invalid      (gateway.triggers)
    │   │   ├── BatchConfigError    a batch-layer file or parameter is invalid   (batch_layer.errors)
    │   │   └── ApiConfigError      the fleet API's file is invalid or incomplete (fleet_api.errors)
    │   ├── BrokerUrlError          a broker URL is malformed                    (dcm_base.broker_url)
    │   ├── DbcError                a DBC file cannot be read or parsed          (dbc)
    │   ├── PacketError             the packet format refuses something          (minute_packet.errors)
    │   │   ├── PacketEncodeError   the caller handed the encoder something invalid
    │   │   ├── PacketDecodeError   bytes off the wire are not a valid packet (has .reason)
    │   │   ├── SchemaError         a schema or collection config is invalid or unknown
    │   │   └── TopicError          a topic, prefix or vehicle id the topics module does not build
    │   ├── FrameDecodeError        a CAN frame does not decode                  (gateway.decoder)
    │   ├── ReplayError             a CAN log cannot be opened or read           (gateway.replay)
    │   ├── LakeRootError           a lake root or layout is unusable            (cloud_sink.lake)
    │   ├── FleetSpecError          a fleet description is invalid               (simulator.fleet_spec)
    │   ├── PkiError                a CA, certificate or key cannot be made/read (dcm.pki)
    │   ├── ConditionError          a rule or trigger condition does not parse   (minute_packet.condition)
    │   ├── StoreError              the rules' state database cannot be opened   (speed_layer.errors)
    │   ├── EnrichmentError         an operational table is missing or malformed (batch_layer.errors)
    │   ├── LakeError               the lake cannot be read by the batch layer   (batch_layer.errors)
    │   ├── TokenError              an API token operation got bad input         (fleet_api.errors)
    │   ├── BadRequest              an API request is malformed: HTTP 400        (fleet_api.errors)
    │   ├── Unauthorized            no valid bearer token: HTTP 401              (fleet_api.errors)
    │   ├── Forbidden               the token may see but not change it: 403     (fleet_api.errors)
    │   ├── NotFound                unknown or outside the token's scope: 404    (fleet_api.errors)
    │   ├── Conflict                the change conflicts with the stored state: 409 (fleet_api.errors)
    │   └── RateLimited             the token's rate limit is spent: HTTP 429    (fleet_api.errors)
    └── ServiceError                something failed while running: exit 1
        ├── BrokerStartError        a private Mosquitto could not be started     (dcm.broker)
        ├── MosquittoError          a test/bench Mosquitto exited or did not listen (dcm.mosquitto)
        ├── GatewayError            acquisition or storage stopped the gateway   (gateway.service)
        ├── OutboxError             the outbox cannot store or read a packet     (gateway.outbox)
        ├── StagingError            the sink's staging database failed           (cloud_sink.staging_db)
        ├── RegistryFull            no room for a new schema: all held are in use (cloud_sink.registry)
        ├── LakeError               writing or reading the lake failed           (cloud_sink.lake)
        ├── CompactionError         a partition could not be compacted           (cloud_sink.compact)
        ├── MqttMuxError            the fleet's MQTT connections failed          (simulator.mqtt_mux)
        ├── DemoError               the demo could not finish                    (dcm.demo)
        ├── EngineError             a batch query engine failed or is missing    (batch_layer.errors)
        └── SourceUnavailable       an API data source cannot be read: HTTP 503  (fleet_api.errors)

The value-layer packages and the fleet API keep a base of their own as well (``SpeedLayerError``,
``BatchLayerError``, both under ``DcmError``), so each of their errors is both "of that
layer" and an input error or a failure::

    DcmError
    ├── SpeedLayerError             base of the speed layer's errors
    ├── BatchLayerError             base of the batch layer's errors
    └── ApiError                    base of the fleet API's errors (each has its HTTP status)

Library code raises these typed errors (a third-party error is chained with
``from`` where it enters); only the CLI turns them into a one-line message and
:func:`exit_code`. Errors that services count rather than raise (a malformed
frame or packet) still belong to the tree, so a caller can catch them by kind.
"""
from __future__ import annotations

EXIT_INPUT = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class DcmError(Exception):
    """Base of every error the project raises on purpose."""


class InputError(DcmError):
    """Bad input named by the user (a file, key, option or URL): one line on stderr, exit code 2."""


class ServiceError(DcmError):
    """A service or command failed while running (broker, disk, lake, staging): exit code 1."""


class ConfigError(InputError):
    """A configuration file or value is invalid; the message names the file and key."""


def exit_code(exc: BaseException) -> int | None:
    """The exit code the ``dcm`` command returns for ``exc``; None for an error outside the tree
    (a bug: let it propagate with its traceback)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, InputError):
        return EXIT_INPUT
    if isinstance(exc, ServiceError):
        return EXIT_FAILURE
    return None
