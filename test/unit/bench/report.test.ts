import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { median, overRounds, renderTable, toRows } from '../../../bench/lib/report.js';

describe('bench report', () => {
  it('takes the median of the rounds', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), undefined);
  });

  it('judges relais strictly: a client error in any round voids its figure', () => {
    const f = overRounds([{ value: 600, errors: 0 }, { value: 700, errors: 2 }, { value: 650, errors: 0 }], true);
    assert.equal(f.value, undefined);
    assert.equal(f.note, '2 client errors');
  });

  it("keeps an anchor's figure from its error-free rounds, and says so", () => {
    const f = overRounds([{ value: 322, errors: 3 }, { value: 378, errors: 0 }, { value: 335, errors: 0 }], false);
    assert.equal(f.value, (378 + 335) / 2);
    assert.equal(f.note, '3 client errors in 1 of 3 rounds; median of the others');
    const none = overRounds([{ value: 1, errors: 1 }], false);
    assert.equal(none.value, undefined);
    assert.equal(none.note, '1 client errors');
    const clean = overRounds([{ value: 5, errors: 0 }], false);
    assert.deepEqual(clean, { value: 5 });
  });

  it('prints the note next to the figure; relais failing clients fails the target', () => {
    const rows = toRows([
      {
        id: 'cold',
        label: 'cold pull',
        unit: 'MB/s',
        better: 'higher',
        values: { distribution: 356, nginx: 664 },
        notes: { distribution: '3 client errors in 1 of 3 rounds; median of the others', relais: '2 client errors' },
        target: { text: '>= 1.2x nginx', check: (v) => (v.relais === undefined || v.nginx === undefined ? undefined : v.relais / v.nginx >= 1.2) },
      },
    ]);
    assert.equal(rows[0]?.verdict, 'FAIL');
    assert.equal(rows[0]?.relaisOverNginx, null);
    const table = renderTable(rows);
    assert.match(table, /356 \(3 client errors in 1 of 3 rounds; median of the others\)/);
    assert.match(table, /- \(2 client errors\)/);
    // Without relais's errors and without its figure, the target cannot be judged.
    const unjudged = toRows([{ id: 'x', label: 'x', unit: 'MB/s', better: 'higher', values: { nginx: 1 }, target: { text: 't', check: () => undefined } }]);
    assert.equal(unjudged[0]?.verdict, 'n/a');
  });
});
