"""The acting half: policies over window findings, the alert lifecycle, retrain/rollback requests, notifications.

Flow: the merge stage publishes each written window's judged rows (`findings.WindowFindings`) on
``<prefix>findings``; the policy engine (`engine`) turns them into alert transitions and action requests
(`decisions`); the actions stage publishes those on ``<prefix>alerts``, ``<prefix>retrain`` and
``<prefix>rollback`` and records them in ``driftline.alerts``; the dispatcher (`dispatch`) delivers alerts
to PagerDuty Events v2 and signed JSON webhooks.
"""
