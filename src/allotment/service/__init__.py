"""The service: the FastAPI app (``app``), authentication and one dependency per
authorisation rule (``deps``), the API's routers (``api/``), schemas and input bounds, the
dashboard (``ui/``), and the live scheduler loop (``loop/``)."""
