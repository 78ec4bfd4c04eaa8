"""IntakeFunction: every API route but /health and /metrics, FastAPI behind Mangum."""

from mailproxy.api import create_app
from mailproxy.logs import configure_logging
from mangum import Mangum

configure_logging("IntakeFunction")
app = create_app()
handler = Mangum(app, lifespan="off")
