"""Client certificate audit engine for Azure App Service (pure core + Azure adapters)."""
