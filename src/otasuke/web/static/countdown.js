// 残り時間 (REQ-MON-60MIN): ticks every [data-deadline] element each second.
(function () {
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var deadline = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(deadline)) { return; }
      var s = Math.trunc((deadline - now) / 1000);
      var a = Math.abs(s);
      var clock = Math.floor(a / 60) + ":" + pad(a % 60);
      var tpl = s >= 0 ? el.getAttribute("data-left") : el.getAttribute("data-overdue");
      el.textContent = tpl.replace("{clock}", clock);
      el.classList.toggle("overdue", s < 0);
      el.classList.toggle("soon", s >= 0 && s < 15 * 60);
    });
  }
  tick();
  setInterval(tick, 1000);
})();
