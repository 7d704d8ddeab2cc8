// Loaded after require.js and before embed-amd.js: tell requirejs and webpack that the vendored
// @jupyter-widgets/html-manager lives next to this file, in widgets/. Without it the manager's module URL, and with
// it every font and chunk URL, is resolved against the page (404s for the widget fonts on every widget page).
(function () {
  var base = new URL("widgets/", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = base;
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": base.replace(/\/$/, "") } });
})();
