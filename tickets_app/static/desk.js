// The desk works without script; this only adds conveniences.
document.addEventListener("DOMContentLoaded", () => {
  // The template picker copies a rendered template into the reply box.
  const picker = document.getElementById("template-picker");
  const body = document.getElementById("reply-body");
  if (picker && body) {
    picker.addEventListener("change", () => {
      const option = picker.selectedOptions[0];
      if (option && option.dataset.body) body.value = option.dataset.body;
    });
  }
  // "/" jumps to the search box, as in most web tools, unless the key is typed into a field.
  const search = document.getElementById("search-box");
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (event.key === "/" && search && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      search.focus();
      search.select();
    }
  });
});
