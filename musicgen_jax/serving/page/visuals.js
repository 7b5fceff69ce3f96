// The waveform and spectrogram of a finished clip, drawn in the browser from its decoded audio
// (Web Audio API decodes the file, canvas draws it): no server work, no library.
// `window.musicgenVisuals` holds what was drawn last, for tests and the console.
"use strict";

const VISUAL_BACKGROUND = [250, 251, 255]; // the canvases' background (the page's #fafbff)
const WAVE_COLOUR = "#5b4bdb"; // --accent
const FFT_SIZE = 1024; // 32 ms at 32 kHz: a few frequency bins per mel band below 1 kHz
const FLOOR_DB = -80; // quieter than this (below the clip's loudest bin) is drawn as silence
// Dark to bright, a magma-like ramp: silence is near black, the loudest bins near white-yellow.
const RAMP = [
  [0, [12, 8, 36]],
  [0.3, [88, 24, 120]],
  [0.55, [190, 55, 110]],
  [0.8, [250, 140, 70]],
  [1, [252, 250, 190]],
];

const visuals = { drawn: 0, clip: null, sampleRate: null, seconds: null, error: null };
window.musicgenVisuals = visuals;

async function decodeClip(blob, sampleRate) {
  // An OfflineAudioContext decodes without an audio output (headless browsers, no sound card);
  // decoding resamples to the context's rate, so give it the clip's own.
  const context = new OfflineAudioContext(1, 1, sampleRate || 32000);
  const buffer = await context.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(buffer.length); // [samples], the channels averaged
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < data.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  return { samples: mono, sampleRate: buffer.sampleRate };
}

function sizeCanvas(canvas) {
  // Draw at device pixels so the lines stay sharp on high-density screens.
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  return canvas.getContext("2d");
}

function drawWaveform(canvas, samples) {
  const context = sizeCanvas(canvas);
  const { width, height } = canvas;
  context.fillStyle = `rgb(${VISUAL_BACKGROUND.join(",")})`;
  context.fillRect(0, 0, width, height);
  let peak = 1e-9;
  for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
  const middle = height / 2;
  const scale = (height / 2 - 2) / peak; // the loudest sample reaches the edge
  context.fillStyle = WAVE_COLOUR;
  const perColumn = samples.length / width;
  for (let x = 0; x < width; x++) {
    // Each pixel column spans many samples: draw their range, min to max.
    const start = Math.floor(x * perColumn);
    const end = Math.max(start + 1, Math.floor((x + 1) * perColumn));
    let low = 0;
    let high = 0;
    for (let i = start; i < end && i < samples.length; i++) {
      low = Math.min(low, samples[i]);
      high = Math.max(high, samples[i]);
    }
    const top = middle - high * scale;
    context.fillRect(x, top, 1, Math.max(1, (high - low) * scale));
  }
}

function fft(real, imag) {
  // In-place iterative radix-2 FFT; real.length is a power of two.
  const n = real.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [real[i], real[j]] = [real[j], real[i]];
      [imag[i], imag[j]] = [imag[j], imag[i]];
    }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const step = (-2 * Math.PI) / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < size / 2; k++) {
        const cos = Math.cos(step * k);
        const sin = Math.sin(step * k);
        const a = start + k;
        const b = a + size / 2;
        const re = real[b] * cos - imag[b] * sin;
        const im = real[b] * sin + imag[b] * cos;
        real[b] = real[a] - re;
        imag[b] = imag[a] - im;
        real[a] += re;
        imag[a] += im;
      }
    }
  }
}

const mel = (hz) => 2595 * Math.log10(1 + hz / 700);
const hzOfMel = (m) => 700 * (10 ** (m / 2595) - 1);

function rampColour(level) {
  for (let i = 1; i < RAMP.length; i++) {
    const [end, high] = RAMP[i];
    const [begin, low] = RAMP[i - 1];
    if (level <= end) {
      const t = (level - begin) / (end - begin);
      return low.map((value, c) => Math.round(value + t * (high[c] - value)));
    }
  }
  return RAMP[RAMP.length - 1][1];
}

function drawSpectrogram(canvas, samples, sampleRate) {
  // One short-time spectrum per pixel column (Hann window), rows on the mel scale (low notes get
  // room), decibels below the clip's loudest bin mapped onto the ramp.
  const context = sizeCanvas(canvas);
  const { width, height } = canvas;
  const hann = new Float32Array(FFT_SIZE).map((_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / FFT_SIZE));
  const bins = FFT_SIZE / 2;
  const topMel = mel(sampleRate / 2);
  const rowBins = []; // [height] of [first bin, last bin], row 0 at the top (the highest band)
  for (let row = 0; row < height; row++) {
    const upper = hzOfMel((topMel * (height - row)) / height);
    const lower = hzOfMel((topMel * (height - row - 1)) / height);
    const first = Math.min(bins - 1, Math.floor((lower / (sampleRate / 2)) * bins));
    rowBins.push([first, Math.max(first, Math.min(bins - 1, Math.floor((upper / (sampleRate / 2)) * bins)))]);
  }
  const levels = new Float32Array(width * height); // [height, width] in dB
  const real = new Float32Array(FFT_SIZE);
  const imag = new Float32Array(FFT_SIZE);
  const power = new Float32Array(bins);
  let loudest = -Infinity;
  for (let x = 0; x < width; x++) {
    const centre = Math.floor(((x + 0.5) * samples.length) / width);
    for (let i = 0; i < FFT_SIZE; i++) {
      const at = centre - FFT_SIZE / 2 + i;
      real[i] = at >= 0 && at < samples.length ? samples[at] * hann[i] : 0;
      imag[i] = 0;
    }
    fft(real, imag);
    for (let k = 0; k < bins; k++) power[k] = real[k] * real[k] + imag[k] * imag[k];
    for (let row = 0; row < height; row++) {
      const [first, last] = rowBins[row];
      let strongest = 0;
      for (let k = first; k <= last; k++) strongest = Math.max(strongest, power[k]);
      const db = 10 * Math.log10(strongest + 1e-12);
      levels[row * width + x] = db;
      loudest = Math.max(loudest, db);
    }
  }
  const image = context.createImageData(width, height);
  for (let i = 0; i < levels.length; i++) {
    const level = Math.max(0, Math.min(1, 1 - (levels[i] - loudest) / FLOOR_DB));
    const [r, g, b] = rampColour(level);
    image.data.set([r, g, b, 255], i * 4);
  }
  context.putImageData(image, 0, 0);
}

async function showVisuals(blob, sampleRate, clipName) {
  // Draw the clip in the player's canvases; a clip that cannot be decoded hides them.
  const box = document.getElementById("visuals");
  box.hidden = false;
  visuals.error = null;
  try {
    const clip = await decodeClip(blob, sampleRate);
    drawWaveform(document.getElementById("waveform"), clip.samples);
    drawSpectrogram(document.getElementById("spectrogram"), clip.samples, clip.sampleRate);
    document.getElementById("spectrogram-caption").textContent =
      `spectrogram · mel scale, 0–${Math.round(clip.sampleRate / 2000)} kHz`;
    Object.assign(visuals, {
      clip: clipName,
      sampleRate: clip.sampleRate,
      seconds: clip.samples.length / clip.sampleRate,
      drawn: visuals.drawn + 1,
    });
  } catch (error) {
    box.hidden = true;
    visuals.error = `cannot draw the clip: ${error.message || error}`;
  }
}

window.showVisuals = showVisuals;
