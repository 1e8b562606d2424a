"""The Azure Functions app (Python v2 programming model): registers the blueprints of ``handlers/``.

Nothing else happens at import: the worker indexes this module, so SDK clients and settings are built on
the first invocation (``shared.bootstrap.PROCESS_RUNTIME``), once per process.
"""

import azure.functions as func

from handlers.http import bp as http_triggers
from handlers.servicebus import bp as servicebus_triggers
from handlers.timers import bp as timer_triggers

app = func.FunctionApp()
app.register_functions(servicebus_triggers)
app.register_functions(timer_triggers)
app.register_functions(http_triggers)
