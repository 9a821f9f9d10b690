"""
How C{report --mqtt} is built: the MQTT link publishing the reporter's
outbox, and the outputs (C{--output}), whose every change on the pin is a
reading in the outbox, so that their state topics show what the pins do.

The reporter itself is unchanged: it samples into the outbox; this adds the
outbox's other way out. (One outbox, one way out: C{--connect} or C{--mqtt}.)
"""

from __future__ import annotations

from twisted.logger import Logger

from rpisensor.mqtt.control import MQTTControl
from rpisensor.mqtt.discovery import Discovery
from rpisensor.mqtt.link import MQTTLink
from rpisensor.mqtt.topics import Topics

_log = Logger(namespace="rpisensor.mqtt")


def attach_mqtt(service, options, reactor, reader, pool) -> MQTTLink:
    """
    Add the outputs and the MQTT link to C{report}'s C{service} (a
    L{rpisensor.roles.report.service.ReportService}). They are added last,
    so they stop first: the link says C{offline} and closes, then the outputs
    go to their safe levels (recorded in the outbox, published at the next
    start), then the sampling, the outbox and the reads stop.
    """
    settings = options.mqtt_settings(options.device_id(), options.journal_settings().window)
    if options.mqtt_warning is not None:
        _log.warn("{warning}.", warning=options.mqtt_warning)
    controller = None
    if options["outputs"]:
        from rpisensor.roles.serve.control import OutputsService
        from rpisensor.roles.serve.service import open_outputs

        controller = open_outputs(reactor, reader, pool, options["outputs"], options["max-ttl"])
        OutputsService(controller, service.outbox, numbering=reader.backend.numbering).setServiceParent(service)
    control = None
    if settings.control:
        if controller is None:
            _log.warn("--mqtt-control without --output: there is nothing to drive.")
        else:
            control = MQTTControl(controller, reactor, options["control-rate"])
    topics = Topics(settings.prefix, settings.device, settings.ha_prefix)
    discovery = Discovery(topics, options.mqtt_entities(), settings.discovery)
    reporter = service.reporter
    link = MQTTLink(reactor, settings, service.outbox, discovery, control, on_delivered=reporter.acknowledged)
    reporter.way_out = link.way_out  # status: connected to the broker, protocol=mqtt
    link.setServiceParent(service)
    return link
