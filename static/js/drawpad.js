/*
 * DrawPad: a reusable drawing surface on a <canvas>, for mouse, touch and pen alike.
 *
 *   <canvas id="pad" class="drawpad" aria-label="Drawing area"></canvas>
 *   <script src="/static/js/drawpad.js"></script>
 *   const pad = DrawPad.create(document.getElementById("pad"), {
 *     lineWidth: 18,          // pen width in CSS pixels (scaled with the pad's size, see `reference`)
 *     reference: 280,         // the CSS width at which lineWidth applies; null: never scale
 *     color: "#000",          // ink colour
 *     background: null,       // null: transparent PNG (the server composites it on white), or a fill
 *     exportSize: null,       // toDataURL size in pixels (e.g. 280); null: the backing store's size
 *     pressure: false,        // true: pen pressure changes the width (pens only)
 *     onchange: (pad) => {},  // after every finished stroke, clear() and undo()
 *   });
 *   pad.toDataURL()           // "data:image/png;base64,...", ready for {"image": ...}
 *   pad.toBlob(type)          // a Promise of a Blob, for multipart uploads
 *   pad.clear(); pad.undo(); pad.isEmpty(); pad.strokeCount(); pad.destroy();
 *
 * How: pointer events with pointer capture (so a stroke that leaves the canvas continues),
 * coalesced events for smooth fast strokes, `touch-action: none` so a finger draws instead of
 * scrolling. The backing store is sized to CSS size x devicePixelRatio for sharp lines, and
 * strokes are kept in CSS-relative coordinates so a resize or rotation redraws them intact.
 * The canvas gets tabindex="0"; keyboard users act through the page's buttons.
 * Give the canvas a CSS size (e.g. width: 100%; aspect-ratio: 1 / 1, or height: 100% in a sized
 * box): the pad sets the backing store from that size, so without it the canvas would resize itself.
 */
(function (global) {
  "use strict";

  const DEFAULTS = {
    lineWidth: 18,
    reference: 280,
    color: "#000",
    background: null,
    exportSize: null,
    pressure: false,
    onchange: null,
  };

  function create(canvas, options) {
    const opts = Object.assign({}, DEFAULTS, options || {});
    const ctx = canvas.getContext("2d");
    // Each stroke: {points: [[x, y, width], ...]}, all three as fractions of the CSS width/height,
    // so a stroke repaints the same at any size.
    let strokes = [];
    let current = null;
    let activePointer = null;
    let cssWidth = 0;
    let cssHeight = 0;

    canvas.style.touchAction = "none";
    canvas.style.userSelect = "none";
    canvas.style.webkitUserSelect = "none";
    if (!canvas.hasAttribute("tabindex")) canvas.tabIndex = 0;

    function penWidth(event) {
      const scale = opts.reference ? cssWidth / opts.reference : 1;
      let width = opts.lineWidth * scale;
      // Mice report 0.5 pressure while a button is down; only pens carry real pressure.
      if (opts.pressure && event && event.pointerType === "pen" && event.pressure > 0) {
        width *= 0.4 + 1.2 * event.pressure;
      }
      return width;
    }

    function paintBackground(target, w, h) {
      target.clearRect(0, 0, w, h);
      if (opts.background) {
        target.fillStyle = opts.background;
        target.fillRect(0, 0, w, h);
      }
    }

    function paintStroke(target, stroke, w, h) {
      const pts = stroke.points;
      if (!pts.length) return;
      target.strokeStyle = opts.color;
      target.fillStyle = opts.color;
      target.lineCap = "round";
      target.lineJoin = "round";
      if (pts.length === 1) {
        // A tap is a dot.
        target.beginPath();
        target.arc(pts[0][0] * w, pts[0][1] * h, (pts[0][2] * w) / 2, 0, 2 * Math.PI);
        target.fill();
        return;
      }
      // Quadratic curves through the midpoints: smooth without lagging behind the pointer.
      for (let i = 1; i < pts.length; i++) {
        const [x0, y0] = i > 1 ? midpoint(pts[i - 2], pts[i - 1]) : pts[0];
        const [x1, y1] = midpoint(pts[i - 1], pts[i]);
        target.beginPath();
        target.lineWidth = pts[i][2] * w;
        target.moveTo(x0 * w, y0 * h);
        target.quadraticCurveTo(pts[i - 1][0] * w, pts[i - 1][1] * h, x1 * w, y1 * h);
        target.stroke();
      }
    }

    function midpoint(a, b) {
      return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    }

    function redraw() {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      paintBackground(ctx, canvas.width, canvas.height);
      for (const stroke of strokes) paintStroke(ctx, stroke, canvas.width, canvas.height);
      if (current) paintStroke(ctx, current, canvas.width, canvas.height);
    }

    function resize() {
      const rect = canvas.getBoundingClientRect();
      if (!rect.width || !rect.height) return;
      const dpr = global.devicePixelRatio || 1;
      cssWidth = rect.width;
      cssHeight = rect.height;
      const w = Math.round(rect.width * dpr);
      const h = Math.round(rect.height * dpr);
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      redraw();
    }

    function pointAt(event) {
      const rect = canvas.getBoundingClientRect();
      return [
        (event.clientX - rect.left) / rect.width,
        (event.clientY - rect.top) / rect.height,
        penWidth(event) / Math.max(rect.width, 1),
      ];
    }

    function onDown(event) {
      if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
      event.preventDefault();
      activePointer = event.pointerId;
      canvas.setPointerCapture(event.pointerId);
      current = { points: [pointAt(event)] };
      redraw();
    }

    function onMove(event) {
      if (event.pointerId !== activePointer || !current) return;
      event.preventDefault();
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const e of events.length ? events : [event]) current.points.push(pointAt(e));
      redraw();
    }

    function onUp(event) {
      if (event.pointerId !== activePointer) return;
      activePointer = null;
      if (current) {
        strokes.push(current);
        current = null;
        redraw();
        changed();
      }
    }

    function changed() {
      if (typeof opts.onchange === "function") opts.onchange(api);
    }

    function exportCanvas() {
      if (!opts.exportSize) return canvas;
      const out = document.createElement("canvas");
      const size = opts.exportSize;
      out.width = size;
      out.height = Math.round((size * cssHeight) / Math.max(cssWidth, 1));
      const target = out.getContext("2d");
      paintBackground(target, out.width, out.height);
      // Repaint the strokes at the export size: sharper and cheaper than scaling pixels.
      for (const stroke of strokes) paintStroke(target, stroke, out.width, out.height);
      return out;
    }

    const observer = global.ResizeObserver ? new ResizeObserver(resize) : null;
    if (observer) observer.observe(canvas);
    else global.addEventListener("resize", resize);
    canvas.addEventListener("pointerdown", onDown);
    canvas.addEventListener("pointermove", onMove);
    canvas.addEventListener("pointerup", onUp);
    canvas.addEventListener("pointercancel", onUp);
    // Long-press menus on phones would interrupt a stroke.
    const noMenu = (event) => event.preventDefault();
    canvas.addEventListener("contextmenu", noMenu);

    const api = {
      canvas,
      options: opts,
      clear() {
        strokes = [];
        current = null;
        redraw();
        changed();
      },
      undo() {
        if (!strokes.length) return;
        strokes.pop();
        redraw();
        changed();
      },
      isEmpty() {
        return strokes.length === 0 && !current;
      },
      strokeCount() {
        return strokes.length;
      },
      toDataURL(type) {
        return exportCanvas().toDataURL(type || "image/png");
      },
      toBlob(type) {
        return new Promise((resolve) => exportCanvas().toBlob(resolve, type || "image/png"));
      },
      resize,
      destroy() {
        if (observer) observer.disconnect();
        else global.removeEventListener("resize", resize);
        canvas.removeEventListener("pointerdown", onDown);
        canvas.removeEventListener("pointermove", onMove);
        canvas.removeEventListener("pointerup", onUp);
        canvas.removeEventListener("pointercancel", onUp);
        canvas.removeEventListener("contextmenu", noMenu);
      },
    };
    resize();
    return api;
  }

  global.DrawPad = { create };
})(window);
