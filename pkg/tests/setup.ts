import '@testing-library/jest-dom/vitest';
import { configure } from '@testing-library/react';
import { setTemplateSrv, TemplateSrv } from '@grafana/runtime';

import { FakeTemplateSrv } from './templateSrv';

setTemplateSrv(new FakeTemplateSrv() as unknown as TemplateSrv);

// findBy*/waitFor wait for a condition; their bound is only there to end a hang. The
// library's default (1 s) fails tests on a busy machine while the condition is merely
// slow to arrive, so the bound is one no healthy run reaches.
configure({ asyncUtilTimeout: 60_000 });
