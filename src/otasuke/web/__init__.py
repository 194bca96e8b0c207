"""ウェブ: the FastAPI app — JSON API, provider console, customer portal. Thin: it calls the domain rooms."""
