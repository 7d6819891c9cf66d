"""Configuration: one typed, validated object per YAML file and per section.

Modules
-------
reader
    The reading machinery: :class:`~fedbone.config.reader.SettingsCollector`
    (records every problem, raises once), ``read_yaml``, ``require_mapping``
    and the field declarations (``number``, ``whole``, ``one_of``...) through
    which a settings dataclass states each setting, its default and its check
    once.
site
    The site YAML (:class:`SiteConfig`): data, preprocessing, privacy and the
    release rule of the privacy audit (``AuditThresholds``).
study
    The study YAML (:class:`StudyConfig`): phases, model, training, validation,
    simulation; its other sections live in ``privacy`` (``dp``), ``synthetic``
    (``gan``, ``synthesis``, ``synthetic_training``) and ``outcomes``.
profiles
    Named preprocessing profiles (paper scale, CPU scale).
"""

from fedbone.config.site import SiteConfig, load_site_config
from fedbone.config.study import StudyConfig, load_study_config

__all__ = ["SiteConfig", "StudyConfig", "load_site_config", "load_study_config"]
