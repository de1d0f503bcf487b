"""The Azure Functions app: creates the app and registers each blueprint in functions/."""

import azure.functions as func

from functions import activities, orchestrator

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestrator.bp)
app.register_functions(activities.bp)
