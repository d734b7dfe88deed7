"""Alerting: one alert lifecycle for the server, `loglens backtest` and `loglens analyze`.

```
commits ─► scheduler (thread, bounded queue) ─► Evaluator (windows, baselines, series cap)
                                                   │ candidates (detect.rules / detect.anomaly)
                                                   ▼
                                    AlertEngine (pending → firing → resolved, injected clock)
                                      │ NotificationSink        │ AlertPersistence (store.alerts)
                                      ▼                         ▼
                               notify.service             AlertWriter thread
```
`replay` drives the same Evaluator and engine on event time for backtest and analyze.
"""

from loglens.alerting.engine import AlertEngine, Silence, Transition, alert_json, to_dt

__all__ = ["AlertEngine", "Silence", "Transition", "alert_json", "to_dt"]
