"""The service: FastAPI app, auth, schemas, routes, and the live scheduler loop."""
