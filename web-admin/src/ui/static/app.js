// Strata admin UI: the only script. Pages work without it; it adds two conveniences.
// 1. Sections marked data-refresh="<ms>" reload themselves (job progress, copies) while the
//    page is visible, by fetching the page again and swapping that section in.
// 2. Forms marked data-confirm ask before a destructive action.
document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

for (const section of document.querySelectorAll("[data-refresh]")) {
  const every = Number(section.getAttribute("data-refresh")) || 3000;
  const refresh = async () => {
    if (document.hidden || !section.id) return;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const part = fresh.getElementById(section.id);
      if (part) section.innerHTML = part.innerHTML;
      // A study's availability sits outside the live section but changes with its jobs.
      const availability = fresh.getElementById("availability");
      const shown = document.getElementById("availability");
      if (availability && shown) shown.innerHTML = availability.innerHTML;
    } catch (_) {
      // Server restarting or network gone: try again at the next tick.
    }
  };
  setInterval(refresh, every);
}
