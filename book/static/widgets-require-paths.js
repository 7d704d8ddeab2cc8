// Loaded after require.js and before embed-amd.js: tell requirejs and webpack that the vendored
// @jupyter-widgets/html-manager lives next to this file, in widgets/. Without it the manager's module URL, and with
// it every font and chunk URL, is resolved against the page (404s for the widget fonts on every widget page).
(function () {
  var base = new URL("widgets/", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = base;
  var dir = base.replace(/\/$/, "");
  // every module embed-amd.js defines (@jupyter-widgets/base, /controls, /html-manager, .../dist/libembed-amd) then
  // has its URL, and so its webpack public path, in widgets/
  window.require.config({ paths: { "@jupyter-widgets": dir, "@jupyter-widgets/html-manager/dist": dir } });
})();
