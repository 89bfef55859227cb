// prodcat admin UI: conveniences only; every page works without this file.
(function () {
  "use strict";

  // Photo drop zone with a preview.
  var drop = document.getElementById("drop");
  if (drop) {
    var input = document.getElementById(drop.getAttribute("data-input"));
    var preview = document.getElementById("preview");
    var show = function () {
      if (input.files && input.files[0] && preview) {
        preview.src = URL.createObjectURL(input.files[0]);
        preview.hidden = false;
      }
    };
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (event) {
        event.preventDefault();
        drop.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
  }

  // Review queue keys: Enter or a accepts, digits pick a suggestion, / searches categories.
  var review = document.getElementById("review-form");
  var undo = document.getElementById("undo-form");
  if (undo) {
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
      if (event.key === "u" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        undo.submit();
      }
    });
  }
  if (review) {
    var other = document.getElementById("other");
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      var target = event.target;
      var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
      if (typing) {
        if (event.key === "Escape") { target.blur(); }
        return;
      }
      var button = null;
      if (event.key === "Enter" || event.key === "a") {
        if (target && target.tagName === "BUTTON") { return; }
        button = document.getElementById("accept");
      } else if (/^[1-9]$/.test(event.key)) {
        button = review.querySelector('button[data-key="' + event.key + '"]');
      } else if (event.key === "/") {
        event.preventDefault();
        other.focus();
        return;
      }
      if (button) {
        event.preventDefault();
        review.requestSubmit ? review.requestSubmit(button) : button.click();
      }
    });
  }

  // A running job's page follows its progress.
  var job = document.getElementById("job-status");
  if (job && job.getAttribute("data-poll")) {
    window.setTimeout(function () { window.location.reload(); }, 1000);
  }
})();
