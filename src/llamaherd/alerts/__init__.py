"""Alerts: say when a model's server gives up (`error`), crash-loops (`crash_loop`) or comes
back (`recovered`), by webhook and by a command.

    a supervisor's state change
        │  rules.AlertRules.observe: which events (pure: history, snapshot, time)
        │  rules.RateLimit: one per model and event every min_interval_s; the rest are counted
        ▼
    payload.build_alert: the JSON, put on every destination's outbox
        │  outbox.Outbox: bounded (when full, the oldest goes); one task drains it, retrying
        │  with exponential backoff (1 s, 2 s, 4 s... `retries` times)
        ▼
    destinations: a webhook (POST the JSON), a command (no shell; the JSON on stdin and in env)

`alerter.Alerter` ties them to the herd. Its state listener runs inside the supervisor's
transition, so it only decides and enqueues: nothing on the supervisor's path waits for a
delivery. Each destination has its own outbox and task, so a webhook that never answers delays
neither a restart nor the other destinations.

Like metrics/, this package may import gateway, supervisor, catalog and errors, never api, cli
or config: the settings object comes in as a constructor argument.
"""

from llamaherd.alerts.alerter import Alerter, AlertOptions
from llamaherd.alerts.payload import Alert, build_alert, redact_url
from llamaherd.alerts.rules import AlertRules, Event, RateLimit

__all__ = [
    "Alert",
    "AlertOptions",
    "AlertRules",
    "Alerter",
    "Event",
    "RateLimit",
    "build_alert",
    "redact_url",
]
