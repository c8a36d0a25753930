// The only script: the template picker copies a rendered template into the reply box.
document.addEventListener("DOMContentLoaded", () => {
  const picker = document.getElementById("template-picker");
  const body = document.getElementById("reply-body");
  if (!picker || !body) return;
  picker.addEventListener("change", () => {
    const option = picker.selectedOptions[0];
    if (option && option.dataset.body) body.value = option.dataset.body;
  });
});
