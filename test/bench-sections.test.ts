/** bench/RESULTS.md is shared by several bench scripts; each must replace only its own part. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sectionsOf, writeMainReport, writeSection } from '../bench/sections.js';

describe('bench report sections', () => {
  it('sections are appended, replaced in place, and survive a rewrite of the main report', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnv2-sections-'));
    try {
      const f = join(dir, 'RESULTS.md');
      writeMainReport(f, '# Main v1\n');
      writeSection(f, 'quantize', '## int8\n| a | b |\n');
      writeSection(f, 'serve', '## serve v1');
      writeSection(f, 'quantize', '## int8 v2 with $& and $1'); // replacement text is literal
      assert.equal(readFileSync(f, 'utf8'),
        '# Main v1\n\n<!-- quantize:begin -->\n## int8 v2 with $& and $1\n<!-- quantize:end -->\n\n<!-- serve:begin -->\n## serve v1\n<!-- serve:end -->\n');
      writeMainReport(f, '# Main v2\n');
      const text = readFileSync(f, 'utf8');
      assert.ok(text.startsWith('# Main v2\n\n<!-- quantize:begin -->'));
      assert.deepEqual(sectionsOf(text).map((s) => /<!-- (\w+):begin/.exec(s)![1]), ['quantize', 'serve']);
      assert.throws(() => writeSection(f, 'bad name', 'x'), /section name/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
