// Keyboard path for reviewing: j/k next/previous, a accept, r reject, e edit; on lists j/k move and
// Enter opens. Keys typed into a field are left alone. Served from the package: no inline script.
(function () {
  "use strict";
  function typing(event) {
    var t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  function go(id) {
    var link = document.getElementById(id);
    if (link) { window.location.href = link.href; }
  }
  function submit(decision) {
    var button = document.getElementById(decision);
    if (button) { button.click(); }
  }
  function openEditor() {
    var editor = document.getElementById("editor");
    if (!editor) { return; }
    editor.hidden = false;
    editor.querySelectorAll("textarea").forEach(function (area) { area.disabled = false; });
    editor.querySelector("textarea").focus();
  }
  var rows = Array.prototype.slice.call(document.querySelectorAll("[data-list] tr[data-href]"));
  var current = -1;
  function select(index) {
    if (!rows.length) { return; }
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach(function (row, i) { row.classList.toggle("current", i === current); });
    rows[current].scrollIntoView({block: "nearest"});
  }
  document.addEventListener("DOMContentLoaded", function () {
    var edit = document.getElementById("edit");
    if (edit) { edit.addEventListener("click", openEditor); }
    var note = document.getElementById("note");
    if (note) {  // Enter in the note must not pick a decision by itself
      note.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); } });
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && typing(event)) { event.target.blur(); return; }
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (rows.length) {
      if (event.key === "j") { select(current + 1); }
      else if (event.key === "k") { select(current - 1); }
      else if (event.key === "Enter" && current >= 0) { window.location.href = rows[current].dataset.href; }
      return;
    }
    if (event.key === "j") { go("next"); }
    else if (event.key === "k") { go("prev"); }
    else if (event.key === "a") { submit("accept"); }
    else if (event.key === "r") { submit("reject"); }
    else if (event.key === "e") { event.preventDefault(); openEditor(); }
  });
})();
