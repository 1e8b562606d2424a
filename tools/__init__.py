"""Developer tools for aml-dsr (not part of the deployed function app)."""
