"""``inbedder serve``: an HTTP server that speaks OpenAI's embeddings API, plus an instruction per request.

FastAPI (request validation from one schema, OpenAPI docs at ``/docs``) on uvicorn (graceful
shutdown on SIGTERM: it stops accepting, lets the requests in flight finish, then runs the
app's shutdown, which drains the batcher). See ``api`` for the routes and ``batcher`` for how
concurrent requests share the model.
"""

from inbedder.extras import require

require("serve", "fastapi", "uvicorn", "prometheus_client")

from inbedder.serving.api import EmbeddingRequest, ServerSettings, create_app
from inbedder.serving.batcher import Batcher, QueueFull

__all__ = ["Batcher", "EmbeddingRequest", "QueueFull", "ServerSettings", "create_app"]
