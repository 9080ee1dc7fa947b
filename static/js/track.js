// The nose tracker page: webcam frames (or a photo) go to /api/track; the nose point and face
// box come back normalised to the frame and are drawn over it. Server text is set with
// textContent, never parsed as HTML.
(() => {
  "use strict";
  const MAX_FPS = 15;
  const FRAME_WIDTH = 320; // frames are shrunk before sending: the model looks at 96x96 faces
  const JPEG_QUALITY = 0.7;
  const $ = (id) => document.getElementById(id);
  const stage = $("track-stage");
  const video = $("track-video");
  const photo = $("track-photo");
  const overlay = $("track-overlay");
  const empty = $("track-empty");
  const hud = $("track-hud");
  const startBtn = $("track-start");
  const stopBtn = $("track-stop");
  const mirrorBtn = $("track-mirror");
  const fileInput = $("track-file");
  const message = $("track-message");
  const readout = $("track-readout");
  const grab = document.createElement("canvas");

  let stream = null;
  let running = false;
  let inFlight = false;
  let lastSent = 0;
  let timer = 0;
  let doneTimes = []; // response times of the last second, for the FPS figure
  let lastMs = 0;

  const say = (text, kind) => Ui.say(message, text, kind);

  // The overlay is drawn in the displayed element's own pixels; the media may be letterboxed.
  function mediaRect(width, height) {
    const box = stage.getBoundingClientRect();
    overlay.width = Math.round(box.width * devicePixelRatio);
    overlay.height = Math.round(box.height * devicePixelRatio);
    const scale = Math.min(overlay.width / width, overlay.height / height);
    const w = width * scale;
    const h = height * scale;
    return { x: (overlay.width - w) / 2, y: (overlay.height - h) / 2, w, h };
  }

  function draw(result, width, height) {
    const ctx = overlay.getContext("2d");
    const r = mediaRect(width, height);
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    if (!result || !result.found) return;
    const unit = Math.max(2, overlay.width / 160);
    result.faces.forEach((face, i) => {
      const b = face.face;
      ctx.lineWidth = unit / 2;
      ctx.strokeStyle = i === 0 ? "#2ee66b" : "#ffd43b";
      ctx.strokeRect(r.x + b.x * r.w, r.y + b.y * r.h, b.w * r.w, b.h * r.h);
      ctx.beginPath();
      ctx.arc(r.x + face.x * r.w, r.y + face.y * r.h, unit * 1.4, 0, 2 * Math.PI);
      ctx.fillStyle = "#ff2d2d";
      ctx.fill();
      ctx.lineWidth = unit / 3;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    });
  }

  function describe(result) {
    if (!result.found) return "No face found.";
    const n = result.faces.length;
    return (
      "Nose: x " + result.x.toFixed(3) + ", y " + result.y.toFixed(3) +
      " · " + (result.mode === "detected" ? "face detected" : "whole image used as the face") +
      (n > 1 ? " · " + n + " faces" : "")
    );
  }

  function showHud() {
    const now = performance.now();
    doneTimes = doneTimes.filter((t) => now - t < 1000);
    hud.textContent = doneTimes.length + " fps · " + Math.round(lastMs) + " ms";
  }

  async function tick() {
    if (!running) return;
    const now = performance.now();
    // One request in flight at most, and no more than MAX_FPS a second.
    if (!inFlight && video.readyState >= 2 && now - lastSent >= 1000 / MAX_FPS) {
      lastSent = now;
      inFlight = true;
      const w = video.videoWidth;
      const h = video.videoHeight;
      const scale = Math.min(1, FRAME_WIDTH / w);
      grab.width = Math.round(w * scale);
      grab.height = Math.round(h * scale);
      grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
      try {
        const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
        if (!blob) throw new Error("This browser cannot encode a JPEG frame.");
        const started = performance.now();
        const result = await Api.post("/api/track", blob);
        lastMs = performance.now() - started;
        doneTimes.push(performance.now());
        if (running) {
          draw(result, w, h);
          readout.textContent = describe(result);
          say("");
        }
      } catch (err) {
        if (running) say(err.message);
      } finally {
        inFlight = false;
      }
    }
    if (running) showHud();
    timer = requestAnimationFrame(tick);
  }

  function cameraError(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "The camera permission was refused. Allow the camera in the browser's site settings and press " +
        "“Start camera” again, or choose a photo.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No camera was found on this device. Choose a photo instead.";
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return "The camera is busy (another app or tab may be using it). Close it and try again, or choose a photo.";
    }
    return "The camera could not start" + (err && err.message ? ": " + err.message : ".") + " Choose a photo instead.";
  }

  async function start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say(
        window.isSecureContext
          ? "This browser cannot use a camera. Choose a photo instead."
          : "The camera needs HTTPS (or localhost); this page was opened over plain HTTP. Choose a photo instead."
      );
      return;
    }
    startBtn.disabled = true;
    say("Waiting for the camera permission…", "warn");
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (err) {
      say(cameraError(err));
      startBtn.disabled = false;
      return;
    }
    video.srcObject = stream;
    setMirror(true);
    photo.hidden = true;
    video.hidden = false;
    empty.hidden = true;
    try {
      await video.play();
    } catch (err) {
      say("The video could not play: " + err.message);
    }
    say("");
    running = true;
    stopBtn.disabled = false;
    doneTimes = [];
    timer = requestAnimationFrame(tick);
  }

  function stop() {
    running = false;
    cancelAnimationFrame(timer);
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
    video.hidden = true;
    hud.textContent = "";
    startBtn.disabled = false;
    stopBtn.disabled = true;
    draw(null, 1, 1);
    if (photo.hidden) empty.hidden = false;
  }

  async function trackPhoto() {
    const file = fileInput.files[0];
    if (!file) return;
    stop();
    if (photo.src) URL.revokeObjectURL(photo.src);
    photo.src = URL.createObjectURL(file);
    photo.alt = "The chosen photo";
    photo.hidden = false;
    empty.hidden = true;
    // A photo is shown as it is, not as a mirror.
    setMirror(false);
    say("Looking for faces…", "ok");
    try {
      await photo.decode();
      const body = new FormData();
      body.append("image", file, file.name || "photo.jpg");
      const result = await Api.post("/api/track", body);
      draw(result, photo.naturalWidth, photo.naturalHeight);
      readout.textContent = describe(result);
      say(result.found ? "" : "No face was found in this photo.", "warn");
    } catch (err) {
      draw(null, 1, 1);
      readout.textContent = "Nose: –";
      say(err.message || "The photo could not be read.");
    }
  }

  function setMirror(on) {
    stage.classList.toggle("mirrored", on);
    mirrorBtn.setAttribute("aria-pressed", String(on));
  }

  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  mirrorBtn.addEventListener("click", () => setMirror(!stage.classList.contains("mirrored")));
  fileInput.addEventListener("change", trackPhoto);
  window.addEventListener("pagehide", stop);
  document.addEventListener("visibilitychange", () => {
    // A hidden tab would keep the camera light on and the server busy for nothing.
    if (document.hidden && running) stop();
  });
})();
