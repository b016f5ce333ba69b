"""The HTTP API: OpenAI-compatible speech endpoints on the engines the Wyoming services share.

`app.create_app` builds the FastAPI app, `server.HttpServer` runs it with uvicorn in the process's loop.
(Nothing is imported here, so `http.names` stays cheap for the CLI.)
"""
