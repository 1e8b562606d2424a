"""The watchdog timer: requeues requests that nobody works on (a worker died mid-request, a continuation
was lost) and closes those that keep stalling. The policy is ``shared.service.watchdog.sweep``."""

from __future__ import annotations

import azure.functions as func

WATCHDOG_SCHEDULE = "0 */2 * * * *"  # every two minutes; a request is stale after DSR_WATCHDOG_IDLE_SECONDS

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped


@bp.function_name("dsr_watchdog")
@bp.timer_trigger(arg_name="timer", schedule=WATCHDOG_SCHEDULE, run_on_startup=False, use_monitor=True)
def dsr_watchdog(timer: func.TimerRequest) -> None:
    # Imported on the first tick, not when the worker indexes the app: keeps the cold start short.
    from shared.bootstrap import run_watchdog

    run_watchdog()
