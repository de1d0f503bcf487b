"""The Azure Functions app: creates the app and registers each blueprint in functions/."""

import azure.functions as func

from functions import activities, console, http_api, orchestrator, triggers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestrator.bp)
app.register_functions(activities.bp)
app.register_functions(triggers.bp)
app.register_functions(http_api.exports.bp)
app.register_functions(http_api.runs.bp)
app.register_functions(http_api.connections.bp)
app.register_functions(http_api.usage.bp)
app.register_functions(console.home.bp)
app.register_functions(console.statics.bp)
app.register_functions(console.connections.bp)
app.register_functions(console.exports.bp)
app.register_functions(console.runs.bp)
