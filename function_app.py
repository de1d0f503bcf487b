"""The Azure Functions app: creates the app and registers each blueprint in functions/."""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
