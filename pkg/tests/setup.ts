import '@testing-library/jest-dom/vitest';
import { setTemplateSrv, TemplateSrv } from '@grafana/runtime';

import { FakeTemplateSrv } from './templateSrv';

setTemplateSrv(new FakeTemplateSrv() as unknown as TemplateSrv);
