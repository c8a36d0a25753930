"""The report builder: saved reports over the platform data and the proxy's usage rollups, as CSV, JSON and
charts, and scheduled PDF reports by email (README, "Analytics and reporting")."""
