import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constant, cosine, exponential, makeSchedule, step, warmup, type ScheduleSpec } from '../src/train/schedule.js';

/** |a − b| ≤ 1e-12·max(|b|, 1e-300): the closed forms agree with PyTorch's recursive values to a few ulps. */
function close(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(b), 1e-300), `${what}: got ${a}, expected ${b}`);
}

// Values printed by torch 1.13 (optimizer.param_groups[0]['lr'] before each epoch's scheduler.step()).
test('cosine matches PyTorch CosineAnnealingLR(T_max=200), stepped per epoch', () => {
  const s = cosine({ base: 0.1, epochs: 200 });
  const torch: [number, number][] = [
    [0, 0.1],
    [1, 0.09999383162408304],
    [2, 0.09997532801828658],
    [50, 0.0853553390593274],
    [100, 0.050000000000000024],
    [150, 0.014644660940672632],
    [199, 6.168375916970619e-6],
    [200, 0],
  ];
  for (const [e, lr] of torch) {
    close(s(e, 0, 391), lr, `epoch ${e}`);
    close(s(e, 390, 391), lr, `epoch ${e}, last step`); // per-epoch: constant within the epoch
  }
  // Hand-computed: 0.05·(1 + cos(π/200)), 0.05, 0.05·(1 − cos(π/200)).
  const c = Math.cos(Math.PI / 200);
  close(s(1, 0, 1), 0.05 * (1 + c), 'epoch 1 by hand');
  close(s(100, 0, 1), 0.05, 'epoch 100 by hand');
  close(s(199, 0, 1), 0.05 * (1 - c), 'epoch 199 by hand');
  assert.equal(s(250, 0, 1), 0, 'stays at min after T_max');
});

test('cosine with eta_min matches PyTorch (T_max=10, eta_min=0.001)', () => {
  const s = cosine({ base: 0.1, epochs: 10, min: 0.001 });
  const torch = [0.1, 0.09757729755661011, 0.0905463412215599, 0.07959536998847742, 0.0657963412215599, 0.0505,
    0.03520365877844011, 0.02140463001152259, 0.010453658778440109, 0.0034227024433899004, 0.001];
  torch.forEach((lr, e) => close(s(e, 0, 10), lr, `epoch ${e}`));
});

test('cosine per step uses the fractional epoch', () => {
  const s = cosine({ base: 0.1, epochs: 200, perStep: true });
  close(s(0, 0, 4), 0.1, 'start');
  close(s(0, 2, 4), 0.05 * (1 + Math.cos((Math.PI * 0.5) / 200)), 'epoch 0.5');
  close(s(99, 2, 4), 0.05 * (1 + Math.cos((Math.PI * 99.5) / 200)), 'epoch 99.5');
  close(s(100, 0, 4), 0.05, 'epoch 100');
});

test('exponential: 0.98 per epoch (PyTorch ExponentialLR values), staircase within epochs', () => {
  const s = exponential({ base: 0.045, gamma: 0.98 });
  const torch = [0.045, 0.0441, 0.043218, 0.04235364];
  torch.forEach((lr, e) => {
    close(s(e, 0, 100), lr, `epoch ${e}`);
    close(s(e, 99, 100), lr, `epoch ${e}, last step`);
  });
  close(s(100, 0, 100), 0.045 * 0.98 ** 100, 'epoch 100');
});

test('exponential every 2.5 epochs (TF-slim) decays mid-epoch, counted in steps', () => {
  const s = exponential({ base: 0.045, gamma: 0.98, every: 2.5 });
  close(s(0, 0, 10), 0.045, 'epoch 0');
  close(s(2, 4, 10), 0.045, 'epoch 2.4');
  close(s(2, 5, 10), 0.045 * 0.98, 'epoch 2.5');
  close(s(4, 9, 10), 0.045 * 0.98, 'epoch 4.9');
  close(s(5, 0, 10), 0.045 * 0.98 ** 2, 'epoch 5');
  // 3 steps per epoch: 2.5 epochs = 7.5 steps, so the first decay is at global step 8 = epoch 2, step 2.
  close(s(2, 1, 3), 0.045, 'step 7');
  close(s(2, 2, 3), 0.045 * 0.98, 'step 8');
});

test('step matches PyTorch MultiStepLR(milestones=[3, 6], gamma=0.1)', () => {
  const s = step({ base: 0.1, milestones: [6, 3] });
  const torch = [0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002];
  torch.forEach((lr, e) => close(s(e, 7, 10), lr, `epoch ${e}`));
});

test('constant', () => {
  const s = constant(0.3);
  assert.equal(s(0, 0, 1), 0.3);
  assert.equal(s(1000, 5, 10), 0.3);
});

test('warm-up rises linearly per step from startFactor·lr to the schedule', () => {
  const inner = cosine({ base: 0.1, epochs: 10 });
  const s = warmup(inner, { epochs: 2, startFactor: 0.2 });
  close(s(0, 0, 4), 0.1 * 0.2, 'first step');
  close(s(0, 2, 4), 0.1 * (0.2 + 0.8 * 0.25), 'epoch 0.5');
  close(s(1, 0, 4), inner(1, 0, 4) * (0.2 + 0.8 * 0.5), 'epoch 1 (times the cosine value)');
  close(s(1, 3, 4), inner(1, 3, 4) * (0.2 + 0.8 * 0.875), 'epoch 1.75');
  close(s(2, 0, 4), inner(2, 0, 4), 'done at epoch 2');
  close(s(7, 1, 4), inner(7, 1, 4), 'after');
  const d = warmup(constant(1), { epochs: 0.5 });
  close(d(0, 0, 10), 0.1, 'default startFactor 0.1');
  close(d(0, 4, 10), 0.1 + 0.9 * 0.8, 'fractional warm-up epochs');
  close(d(0, 5, 10), 1, 'fractional warm-up end');
});

test('makeSchedule builds every kind from a JSON spec', () => {
  const specs: [ScheduleSpec, number, number, number, number][] = [
    [{ kind: 'cosine', base: 0.1, epochs: 200 }, 100, 0, 1, 0.05],
    [{ kind: 'cosine', base: 0.1, epochs: 200, perStep: true, min: 0.01 }, 100, 0, 1, 0.055],
    [{ kind: 'exponential', base: 0.045, gamma: 0.98, every: 2.5 }, 5, 0, 1, 0.045 * 0.98 * 0.98],
    [{ kind: 'step', base: 1, milestones: [1], gamma: 0.5 }, 1, 0, 1, 0.5],
    [{ kind: 'constant', base: 0.2 }, 9, 0, 1, 0.2],
    [{ kind: 'constant', base: 0.2, warmupEpochs: 1, warmupStartFactor: 0 }, 0, 1, 4, 0.05],
    [{ kind: 'constant', base: 0.2, warmupEpochs: 1 }, 0, 0, 4, 0.02],
  ];
  for (const [spec, e, st, spe, lr] of specs) {
    const json = JSON.parse(JSON.stringify(spec)) as ScheduleSpec;
    close(makeSchedule(json)(e, st, spe), lr, JSON.stringify(spec));
  }
});

test('makeSchedule rejects bad specs with clear messages', () => {
  const bad = (spec: unknown, re: RegExp) => assert.throws(() => makeSchedule(spec as ScheduleSpec, 'run.json'), re);
  bad({ kind: 'linear', base: 1 }, /^Error: run\.json: unknown schedule kind "linear"/);
  bad({ kind: 'cosine', base: 0.1 }, /run\.json: .*epochs must be a finite number/);
  bad({ kind: 'cosine', base: 0.1, epochs: 10, gamma: 0.9 }, /run\.json: cosine schedule: unknown key gamma/);
  bad({ kind: 'step', base: 0.1, milestones: 30 }, /milestones must be an array/);
  bad({ kind: 'exponential', base: 0.1, gamma: 0 }, /gamma must be a finite number > 0/);
  bad({ kind: 'constant', base: -1 }, /base must be a finite number ≥ 0/);
  bad({ kind: 'constant', base: 1, warmupEpochs: -1 }, /warm-up: epochs/);
  bad(null, /run\.json: schedule spec must be an object/);
});
