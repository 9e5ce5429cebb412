import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { describeServiceAliases, dnsProblem, serviceAliases } from '../../../src/products/ci/service-alias.js';

function names(image: string): string[] {
  const r = serviceAliases(image);
  assert.ok(r !== undefined, `${image} should parse`);
  return r.aliases.map((a) => a.name);
}

describe('serviceAliases (GitLab Runner rules)', () => {
  it("GitLab's documented example: registry.example.com/ci/docker:dind", () => {
    const r = serviceAliases('registry.example.com/ci/docker:dind');
    assert.ok(r);
    assert.equal(r.service, 'registry.example.com/ci/docker');
    assert.equal(r.tag, 'dind');
    assert.deepEqual(
      r.aliases.map((a) => [a.name, a.validDns]),
      [
        ['registry.example.com__ci__docker', false],
        ['registry.example.com-ci-docker', true],
      ],
    );
  });

  it("GitLab's documented example: tutum/wordpress (with and without tag)", () => {
    assert.deepEqual(names('tutum/wordpress'), ['tutum__wordpress', 'tutum-wordpress']);
    assert.deepEqual(names('tutum/wordpress:latest'), ['tutum__wordpress', 'tutum-wordpress']);
  });

  it('no slash: one alias, the image name itself', () => {
    assert.deepEqual(names('docker:dind'), ['docker']);
    assert.deepEqual(names('docker:27-dind'), ['docker']);
    assert.deepEqual(names('postgres'), ['postgres']);
  });

  it('strips the registry port', () => {
    assert.deepEqual(names('registry.example.com:5000/ci/docker:dind'), [
      'registry.example.com__ci__docker',
      'registry.example.com-ci-docker',
    ]);
    assert.deepEqual(names('localhost:5000/mysql'), ['localhost__mysql', 'localhost-mysql']);
  });

  it('strips a digest, with or without a tag', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const r = serviceAliases(`postgres@${digest}`);
    assert.ok(r);
    assert.equal(r.digest, digest);
    assert.equal(r.tag, undefined);
    assert.deepEqual(r.aliases.map((a) => a.name), ['postgres']);
    const r2 = serviceAliases(`registry.example.com:5000/ci/docker:dind@${digest}`);
    assert.ok(r2);
    assert.equal(r2.tag, 'dind');
    assert.deepEqual(r2.aliases.map((a) => a.name), ['registry.example.com__ci__docker', 'registry.example.com-ci-docker']);
  });

  it('nested groups', () => {
    assert.deepEqual(names('registry.gitlab.com/group/sub/team/tools/dind:27'), [
      'registry.gitlab.com__group__sub__team__tools__dind',
      'registry.gitlab.com-group-sub-team-tools-dind',
    ]);
  });

  it('names with "_" give no valid host name at all', () => {
    const r = serviceAliases('my_org/build_tools:1');
    assert.ok(r);
    assert.deepEqual(r.aliases.map((a) => a.name), ['my_org__build_tools', 'my_org-build_tools']);
    assert.ok(r.aliases.every((a) => !a.validDns));
    assert.match(describeServiceAliases(r), /set `alias:`/);
  });

  it('invalid references get no alias (GitLab Runner adds none)', () => {
    assert.equal(serviceAliases('Tutum/WordPress'), undefined);
    assert.equal(serviceAliases(''), undefined);
    assert.equal(serviceAliases('docker:'), undefined);
  });

  it('explains the TLS trap when the valid alias is not "docker"', () => {
    const r = serviceAliases('registry.example.com/ci/docker:dind');
    assert.ok(r);
    const text = describeServiceAliases(r);
    assert.match(text, /registry\.example\.com__ci__docker {2}\(NOT a valid host name/);
    assert.match(text, /alias: docker/);
    const plain = serviceAliases('docker:dind');
    assert.ok(plain);
    assert.doesNotMatch(describeServiceAliases(plain), /alias: docker/);
  });
});

describe('dnsProblem', () => {
  it('accepts host names and rejects the rest', () => {
    assert.equal(dnsProblem('docker'), undefined);
    assert.equal(dnsProblem('registry.example.com-ci-docker'), undefined);
    assert.match(dnsProblem('a_b') ?? '', /"_"/);
    assert.match(dnsProblem('-a') ?? '', /starts or ends/);
    assert.match(dnsProblem(`${'a'.repeat(64)}.com`) ?? '', /64 characters/);
    assert.match(dnsProblem('a..b') ?? '', /empty label/);
    assert.match(dnsProblem(Array.from({ length: 60 }, () => 'abcd').join('.')) ?? '', /at most 253/);
  });
});
