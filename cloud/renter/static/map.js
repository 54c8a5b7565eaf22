// The map of cabinets: Leaflet (vendored in vendor/leaflet, loaded only when a map is shown).
// Without tiles configured the map still shows the markers; without Leaflet the caller keeps
// the list (every cabinet is in it) and says the map is not available.

let loading = null;

export function loadLeaflet(base) {
  if (window.L) return Promise.resolve(window.L);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const css = document.createElement('link');
      css.rel = 'stylesheet';
      css.href = `${base}vendor/leaflet/leaflet.css`;
      document.head.append(css);
      const script = document.createElement('script');
      script.src = `${base}vendor/leaflet/leaflet.js`;
      script.onload = () => (window.L ? resolve(window.L) : reject(new Error('Leaflet did not load')));
      script.onerror = () => {
        loading = null;
        reject(new Error('Leaflet is missing'));
      };
      document.head.append(script);
    });
  }
  return loading;
}

function textOnly(s) {
  const span = document.createElement('span');
  span.textContent = s || '';
  return span.innerHTML; // Leaflet's attribution is HTML: the configured credit is plain text
}

// createMap(el, {...}) -> {update(cabinets)}: markers carry data-cabinet, data-online and a name;
// the first update fits the view to them, later ones (a refresh) keep the renter's view
export async function createMap(el, { base, tiles, attribution, here, label, hereLabel, onPick }) {
  const L = await loadLeaflet(base);
  const map = L.map(el, { attributionControl: Boolean(tiles), zoomSnap: 0.5 });
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 19, attribution: textOnly(attribution), referrerPolicy: 'strict-origin' }).addTo(map);
  }
  const markers = L.layerGroup();
  let fitted = false;

  const update = (cabinets) => {
    const placed = cabinets.filter((c) => c.venue && typeof c.venue.lat === 'number' && typeof c.venue.lon === 'number');
    if (!fitted) {
      // the view first: Leaflet makes a marker's element only once the map has one
      const points = placed.map((c) => [c.venue.lat, c.venue.lon]);
      if (here) points.push([here.lat, here.lon]);
      if (points.length > 1) map.fitBounds(points, { padding: [30, 30], maxZoom: 17 });
      else if (points.length === 1) map.setView(points[0], 16);
      else map.setView([0, 0], 1);
      markers.addTo(map);
      if (here) {
        const dot = L.divIcon({ className: 'here-marker', iconSize: [18, 18], iconAnchor: [9, 9] });
        const me = L.marker([here.lat, here.lon], { icon: dot, keyboard: false, interactive: false }).addTo(map);
        const node = me.getElement();
        if (node) {
          node.setAttribute('role', 'img');
          node.setAttribute('aria-label', hereLabel);
        }
      }
      fitted = true;
    }
    markers.clearLayers();
    for (const c of placed) {
      const inner = document.createElement('span');
      inner.textContent = String(c.packs_ready ?? '');
      const icon = L.divIcon({
        className: `cab-marker${c.online ? '' : ' off'}`,
        html: inner,
        iconSize: [48, 48],
        iconAnchor: [24, 24],
      });
      const marker = L.marker([c.venue.lat, c.venue.lon], { icon, keyboard: true, title: label(c) });
      markers.addLayer(marker);
      const node = marker.getElement();
      if (node) {
        node.dataset.cabinet = c.id;
        node.dataset.online = String(Boolean(c.online));
        node.setAttribute('aria-label', label(c));
      }
      if (onPick) marker.on('click keypress', () => onPick(c));
    }
  };
  return { update, remove: () => map.remove() };
}
