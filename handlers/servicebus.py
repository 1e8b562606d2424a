"""The Service Bus queue trigger on the request queue (single message, auto-complete).

It only translates: the body and the delivery facts go to ``shared.bootstrap.handle_delivery``, whose verdict is settled by
returning (complete) or raising (redeliver; on the last delivery the message goes to the dead-letter queue).
The service layer is imported on the first message, not when the worker indexes the app.
"""

from __future__ import annotations

import azure.functions as func

REQUEST_QUEUE = "%DSR_REQUEST_QUEUE%"
CONNECTION = "ServiceBusConnection"  # identity-based: ServiceBusConnection__fullyQualifiedNamespace

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped


@bp.function_name("dsr_request")
@bp.service_bus_queue_trigger(
    arg_name="msg", queue_name=REQUEST_QUEUE, connection=CONNECTION, cardinality=func.Cardinality.ONE, auto_complete_messages=True
)
def dsr_request(msg: func.ServiceBusMessage) -> None:
    # Imported on the first message, not when the worker indexes the app: keeps the cold start short.
    from shared.bootstrap import handle_delivery
    from shared.service.delivery import Delivery

    handle_delivery(
        msg.get_body(),
        Delivery(
            message_id=msg.message_id,
            delivery_count=msg.delivery_count or 1,
            enqueued_time=msg.enqueued_time_utc,
            properties=dict(msg.application_properties or {}),
        ),
    )
