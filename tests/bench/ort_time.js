// ort_time.js MODEL.onnx THREADS ITERS SIZE - batch-1 latency of ONNX Runtime (CPU), one JSON line:
// {"engine","model","threads","size","iters","p50_ms","min_ms"}. The input is the same non-zero
// pattern `lsq bench` uses (zeros can run faster than real data). Run by tests/bench/bench.sh.
const path = require('path');
const ort = require(path.join(process.env.ORT_DIR, 'node_modules/onnxruntime-node'));
(async () => {
  const [model, threads, iters, size] = process.argv.slice(2).map((v, i) => (i ? +v : v));
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential' });
  const x = new Float32Array(3 * size * size).map((_, i) => Math.fround(Math.sin(Math.fround(i * 0.37)) * 1.5));
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', x, [1, 3, size, size]) };
  for (let i = 0; i < 5; i++) await sess.run(feeds);
  const t = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  t.sort((a, b) => a - b);
  console.log(JSON.stringify({ engine: 'onnxruntime ' + ort.env.versions.common, model: path.basename(model),
    threads, size, iters, p50_ms: t[Math.ceil(0.5 * iters) - 1], min_ms: t[0] }));
})();
