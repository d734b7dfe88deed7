// Starts Swagger UI on /docs from the vendored bundle (a file, not an inline script, so the
// page runs under a script-src 'self' Content-Security-Policy). The online validator badge is
// off: it would call validator.swagger.io.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
