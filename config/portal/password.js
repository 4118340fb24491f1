// Show-password toggles: each password field's checkbox is rendered hidden and shown only
// here, so without this script the field stays an ordinary password field.
"use strict";
document.querySelectorAll(".show-password[hidden]").forEach(function (toggle) {
  var box = toggle.querySelector("input[type=checkbox]");
  var field = box && document.getElementById(box.getAttribute("aria-controls"));
  if (!field) {
    return;
  }
  box.addEventListener("change", function () {
    field.type = box.checked ? "text" : "password";
  });
  // A page shown again from the history cache starts hidden again.
  window.addEventListener("pageshow", function () {
    box.checked = false;
    field.type = "password";
  });
  toggle.hidden = false;
});
