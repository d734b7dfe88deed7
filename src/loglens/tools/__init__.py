"""Developer tools that are not imported at run time: diagrams and the configuration reference."""
