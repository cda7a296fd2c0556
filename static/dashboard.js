// The dashboard's only script of its own, a file because the Content-Security-Policy runs nothing inline.
// A "Copy" button (data-copy-previous) copies the text of the element before it: a key's secret, shown once.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-previous]");
  if (button) navigator.clipboard.writeText(button.previousElementSibling.textContent);
});
