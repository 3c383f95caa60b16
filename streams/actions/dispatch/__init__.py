"""Alert delivery: the dispatcher reads ``<prefix>alerts`` and notifies PagerDuty Events v2 and signed webhooks.

`routes` (which route gets which alert, and its secret), `alert` (the alert.v1 record as the dispatcher reads
it), `pagerduty` and `webhook` (the request bodies and headers), `sender` (one POST with retries), `dispatcher`
(the Kafka loop that publishes one outcome per alert and route on ``<prefix>alert-deliveries``).
This package imports nothing on purpose: the settings import `routes`, and must not load the rest.
"""
